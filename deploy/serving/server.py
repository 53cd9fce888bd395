"""HTTP feature + gallery search service (same as `ppufo-serve`):
python deploy/serving/server.py --model_dir inference/quickstart/person --index_dir index/person --port 8866"""
from ppufo.cli.serve import main

if __name__ == "__main__":
    main()
