#!/bin/sh
# Everything to run the first time fastdnn meets a real NVIDIA GPU, in about 7 minutes, from the repository
# root: sh tools/on_a_gpu.sh [OUTDIR]. Writes gpu_check.txt, gpu_user.txt and bench_gpu.txt to OUTDIR.
out=${1:-.}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L
python3 -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)"
timeout 170 python3 -m fastdnn gpu-check 2>&1 | tee "$out/gpu_check.txt"
timeout 150 python3 tools/gpu_user.py 2>&1 | tee "$out/gpu_user.txt"
timeout 80 python3 -m fastdnn bench --gpu 2>&1 | tee "$out/bench_gpu.txt"
