"""Features, gallery indexing and search with an exported model (same as `ppufo-predict`):
python deploy/python/predict_rec.py -c deploy/configs/inference_rec.yaml -o Global.infer_imgs=query.jpg"""
from ppufo.cli.predict_rec import main

if __name__ == "__main__":
    main()
