#!/usr/bin/env bash
# The whole job on the built-in default: an emulated Raspberry Pi 4 (arm64, Cortex-A72 under qemu-user,
# real ARM sshd in its own network namespace), torchvision's ImageNet MobileNetV2 from a PyPI wheel.
#   fp32 ncnn model -> calibrate + quantize (auto method, mixed precision) -> cross-check on held-out
#   labelled photos -> push int8 model + ncnn aarch64 runtime over SSH -> run there, timing streamed live.
# Run `make demo` (it runs scripts/setup.sh first). Needs root for the emulated board.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
BUILD=build
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1/6 emulated Raspberry Pi 4 (deployer sim up)"
deployer sim up --arch arm64 --count 1

step "2/6 real model and data from wheels: MobileNetV2 -> ncnn fp32 (pnnx), calibration + held-out photos"
python -m examples.zoo mobilenet_v2 --out "$BUILD"
python -m examples.data calibration --out "$BUILD/calib"
python -m examples.data imagenet --out "$BUILD/imagenet"

step "3/6 quantize (profiles/mobilenet_v2.yaml)"
deployer quantize --profile profiles/mobilenet_v2.yaml

step "4/6 cross-check int8 against fp32 on 20 held-out labelled ImageNet photos"
deployer check --profile profiles/mobilenet_v2.yaml --images "$BUILD/imagenet/list.txt"

step "5/6 push the int8 model and the ncnn runtime to sim-1"
deployer push sim-1 --param "$BUILD/mobilenet_v2_int8/mobilenet_v2_int8.param" \
    --bin "$BUILD/mobilenet_v2_int8/mobilenet_v2_int8.bin"

step "6/6 run on sim-1 (NEON int8 under qemu-user: expect ~seconds per inference), timing streamed live"
deployer run sim-1 --param "$BUILD/mobilenet_v2_int8/mobilenet_v2_int8.param" \
    --bin "$BUILD/mobilenet_v2_int8/mobilenet_v2_int8.bin" --shape 224,224,3 --iterations 8 --warmup 1 --threads 1 --no-fp16 --compare

printf '\nDone. The board stays up for more runs: `deployer sim status`, `deployer sim down` to stop it.\n' >&2
