#!/usr/bin/env bash
# The IWAE paper's whole schedule (Burda et al. 2016: 8 stages, 3,280 epochs, lr 1e-3 * 10^(-i/7))
# for the one- and two-layer models on one GPU, then test log p(x) with K = 5000: numbers, learning
# curves (curves.png) and the run folders' metrics in one folder.
#
#   bench/gpu_convergence.sh OUT_DIR
#
# At the paper's batch of 20, 3,280 epochs are 9.8 million sequential steps: days on any GPU, whose
# step time is bound by launches, not by arithmetic. So the GPU run keeps the schedule's shape (its
# stages, epochs and rates) with larger minibatches: BATCH (default 2000) and LR (stage 0's rate,
# default 1e-3). Its numbers are of that budget, not the paper's; say so beside them.
#
# Settings (environment): DEVICE (cuda), STAGES (8), BATCH (2000), LR (1e-3), K (5000),
# CURVE_IMAGES (1000 test images per curve point), FINAL_IMAGES (all 10,000), TRAIN_SIZE (all),
# MODELS ("vae hierarchical"), PYTHON (python3), WHEELS (a folder of wheels to install when Pyro is
# missing: pyro-ppl and pyro-api; nothing else is installed). PVAE_DATA_DIR must hold MNIST/raw
# (on a device machine, carry a copy of ../shared/data inside the checkout, e.g. .data/, ignored
# by .git/info/exclude). Tested on CPU at a tiny budget by tests/test_bench.py.
set -euo pipefail
out=${1:?usage: bench/gpu_convergence.sh OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
if ! "$py" -c "import pyro" 2>/dev/null; then
    [ -n "${WHEELS:-}" ] || { echo "gpu_convergence: Pyro is missing; set WHEELS to a folder with the pyro-ppl and pyro-api wheels" >&2; exit 2; }
    "$py" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
{
    "$py" -c "import torch, pyro, pvae; print('torch', torch.__version__, 'pyro', pyro.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
    for model in ${MODELS:-vae hierarchical}; do
        start=$(date +%s)
        "$py" "$here/bench/converged.py" iwae --root "$out" --name "iwae-$model" --model "$model" \
            --device "${DEVICE:-cuda}" --stages "${STAGES:-8}" --batch-size "${BATCH:-2000}" --lr "${LR:-1e-3}" \
            --iw-samples "${K:-5000}" --curve-images "${CURVE_IMAGES:-1000}" \
            ${FINAL_IMAGES:+--final-images "$FINAL_IMAGES"} ${TRAIN_SIZE:+--train-size "$TRAIN_SIZE"} 2>/dev/null
        echo "$model: $(( $(date +%s) - start )) s in all"
    done
} | tee "$out/summary.md"
# Beside the summary, what comes back from a device machine (files two folders down at most), and
# the curves in one figure beside the paper's VAEs (Burda et al. 2016, Table 1: nll 86.76 and 85.33).
curves=()
for model in ${MODELS:-vae hierarchical}; do
    cp "$out/iwae-$model/metrics.csv" "$out/metrics-$model.csv"
    cp "$out/iwae-$model/curve.json" "$out/curve-$model.json"
    curves+=(--curve "$model" "$out/curve-$model.json")
done
"$py" "$here/bench/converged.py" figure "${curves[@]}" --reference "one layer, Burda et al." -86.76 \
    --reference "two layers, Burda et al." -85.33 --out "$out/curves.png" >/dev/null
