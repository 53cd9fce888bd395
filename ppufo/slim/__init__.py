"""Model compression for deployment: post-training int8 quantisation of exported task models
(quantize.py), run on Paddle's legacy static route (legacy.py, ptq_job.py), and the float-vs-int8
report (report.py). docs/notes/quantization.md has the routes tried and the measurements."""
