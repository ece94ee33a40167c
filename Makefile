# Kinema — `make demo` and `make test` do all set-up on a fresh Debian/Ubuntu machine with the Swift toolchain.
SWIFT ?= swift
KINEMA := .build/release/kinema
DEMO_DIR ?= out/demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build demo demo-video minilm test clean

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

# Trains a small DiT on the bundled synthetic shapes on the CPU, samples a grid per class and scores it.
demo: build
	$(KINEMA) train --data synthetic --model tiny --image-size 16 --steps 3500 --lr 2e-3 --log-every 250 \
	  --output $(DEMO_DIR)
	$(KINEMA) sample --checkpoint $(DEMO_DIR)/checkpoint.safetensors --class all --per-class 8 --steps 50 \
	  --sampler ddim --cfg-scale 3 --output $(DEMO_DIR)/samples.png
	$(KINEMA) eval-synthetic --checkpoint $(DEMO_DIR)/checkpoint.safetensors --per-class 16 --steps 50 --cfg-scale 3

# all-MiniLM-L6-v2, the default text encoder, into the model cache (~/.cache/kinema; once).
minilm:
	scripts/fetch-minilm

# Text-to-video on the bundled captioned clips ("a red square moving left"): a tiny Latte (hidden 128, depth 4,
# patch 2, 2.1M parameters) with MiniLM captions and timesteps shifted toward the noise end (where the direction of
# motion is decided), 4000 steps (≈ 72 min on 2 CPU cores by estimate; add DEVICE=cuda for a GPU), then a clip and the score.
DEVICE ?= cpu
demo-video: build minilm
	$(KINEMA) train --data synthetic-video --image-size 16 --num-frames 8 --patch-size 2 --timestep-shift 3 \
	  --steps 4000 --batch-size 16 --lr 1e-3 --log-every 250 --device $(DEVICE) --output $(DEMO_DIR)-video
	$(KINEMA) sample --checkpoint $(DEMO_DIR)-video/checkpoint.safetensors --prompt "a red square moving left" \
	  --steps 30 --device $(DEVICE) --out $(DEMO_DIR)-video/clip.mp4
	$(KINEMA) eval-synthetic --checkpoint $(DEMO_DIR)-video/checkpoint.safetensors --per-class 2 --steps 30 \
	  --device $(DEVICE) --grid $(DEMO_DIR)-video/all-prompts.mp4

test: deps
	$(SWIFT) build -c release
	$(SWIFT) test --disable-swift-testing

clean:
	rm -rf .build out
