# Kinema — `make demo` and `make test` do all set-up on a fresh Debian/Ubuntu machine with the Swift toolchain.
SWIFT ?= swift
KINEMA := .build/release/kinema
DEMO_DIR ?= out/demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build demo demo-video demo-image minilm test clean

# Installs what is missing: ffmpeg (image/video decode and encode) and OpenBLAS (CPU matrix products).
deps:
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	[ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/aarch64-linux-gnu/cblas.h ] || \
	  [ -e /usr/include/cblas.h ] || missing="$$missing libopenblas-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

build: deps
	$(SWIFT) build -c release

# Text-to-video in a few minutes on the CPU: a tiny video DiT (hidden 128, depth 4, 2×2×2 patches, cross-attention to
# MiniLM captions; 256 tokens a clip) on the bundled captioned clips ("a red square moving left"), 1000 steps with
# timesteps shifted toward the noise end, then an mp4 for a prompt, a grid of every prompt and the score (colour,
# shape and direction of motion, on held-out prompts too).
DEVICE ?= cpu
demo: build minilm
	$(KINEMA) train --data synthetic-video --video-model video-dit --temporal-patch 2 --patch-size 2 --image-size 16 \
	  --num-frames 8 --timestep-shift 3 --steps 1000 --batch-size 16 --lr 1e-3 --log-every 100 --device $(DEVICE) \
	  --output $(DEMO_DIR)
	$(KINEMA) sample --checkpoint $(DEMO_DIR)/checkpoint.safetensors --prompt "a red square moving left" \
	  --steps 30 --device $(DEVICE) --out $(DEMO_DIR)/clip.mp4
	$(KINEMA) eval-synthetic --checkpoint $(DEMO_DIR)/checkpoint.safetensors --per-class 2 --steps 30 \
	  --device $(DEVICE) --grid $(DEMO_DIR)/all-prompts.mp4

# all-MiniLM-L6-v2, the default text encoder, into the model cache (~/.cache/kinema; once).
minilm:
	scripts/fetch-minilm

# The Latte recipe: a tiny Latte with 2×2 patches (2.1M parameters, 512 tokens a clip), timesteps shifted toward the
# noise end (where the direction of motion is decided), 4000 steps (≈ 72 min on 2 CPU cores by estimate; add
# DEVICE=cuda for a GPU), then a clip and the score.
demo-video: build minilm
	$(KINEMA) train --data synthetic-video --image-size 16 --num-frames 8 --patch-size 2 --timestep-shift 3 \
	  --steps 4000 --batch-size 16 --lr 1e-3 --log-every 250 --device $(DEVICE) --output $(DEMO_DIR)-video
	$(KINEMA) sample --checkpoint $(DEMO_DIR)-video/checkpoint.safetensors --prompt "a red square moving left" \
	  --steps 30 --device $(DEVICE) --out $(DEMO_DIR)-video/clip.mp4
	$(KINEMA) eval-synthetic --checkpoint $(DEMO_DIR)-video/checkpoint.safetensors --per-class 2 --steps 30 \
	  --device $(DEVICE) --grid $(DEMO_DIR)-video/all-prompts.mp4

# The class-conditional image DiT on the bundled synthetic shapes: trains, samples a grid per class, scores it.
demo-image: build
	$(KINEMA) train --data synthetic --model tiny --image-size 16 --steps 3500 --lr 2e-3 --log-every 250 \
	  --output $(DEMO_DIR)-image
	$(KINEMA) sample --checkpoint $(DEMO_DIR)-image/checkpoint.safetensors --class all --per-class 8 --steps 50 \
	  --sampler ddim --cfg-scale 3 --output $(DEMO_DIR)-image/samples.png
	$(KINEMA) eval-synthetic --checkpoint $(DEMO_DIR)-image/checkpoint.safetensors --per-class 16 --steps 50 --cfg-scale 3

test: deps
	$(SWIFT) build -c release
	$(SWIFT) test --disable-swift-testing

clean:
	rm -rf .build out
