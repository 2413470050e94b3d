# lsd-nm — the experiments of "Local Shape Descriptors for Neuron Segmentation", step by step.
#
#   make demo      set up, then run the whole pipeline on the embedded synthetic dataset
#   make test      set up, then run the test suite
#   make help      list every target
#
# Every Python step runs through $(RUN): the project's .venv by default, or a Singularity/Apptainer image with
# CONTAINER=path/to/image.sif (CONTAINER_MODE=run for images whose environment only exists under `run`).

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# ---- parameters (the same names for every step) ----------------------------------------------------------------
DATASET ?= synthetic
NETWORK ?= mtlsd
ITERATION ?= latest
CONFIG ?= 03_predict/configs/synthetic.json
DATA ?= $(ROOT)/01_data/funke/$(DATASET)/training/$(firstword $(VOLUMES))
VOLUMES ?=
ROI ?=
ALL ?=
ARGS ?=
THRESHOLDS ?=
THRESHOLD_RULE = $(if $(THRESHOLDS),--threshold-rule $(THRESHOLDS))
DEMO_NETWORKS ?=
DEMO_FAST ?=
GPU ?=
VOLARA ?=
PEER_VOLARA ?=
TF_EXTRA := $(if $(GPU),gpu,cpu)

# ---- how Python runs ---------------------------------------------------------------------------------------------
VENV ?= $(ROOT)/.venv
PYTHON ?=
SINGULARITY ?= singularity
CONTAINER ?=
CONTAINER_MODE ?= exec
ifeq ($(strip $(CONTAINER)),)
RUN = $(VENV)/bin/python
ENV_READY = $(VENV)/.installed-$(TF_EXTRA)
else
RUN = $(SINGULARITY) $(CONTAINER_MODE) --nv --bind $(ROOT) $(CONTAINER) python
ENV_READY =
# the repository's package is importable inside any image that has the dependencies; the image's Python runs it
export SINGULARITYENV_PYTHONPATH := $(ROOT)/src
export APPTAINERENV_PYTHONPATH := $(ROOT)/src
export SINGULARITYENV_LSD_NM_NO_VENV := 1
export APPTAINERENV_LSD_NM_NO_VENV := 1
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

NETWORK_DIR = $(ROOT)/02_train/$(DATASET)/$(NETWORK)

.PHONY: help setup test demo synthetic fetch-data masks view fetch-checkpoint container mknet train view-batch \
        predict-scan predict segment status evaluate clean-data clean import-checkpoint images fetch-test-data fetch-published \
        reproduce benchmark

help: ## list every target with one line each
	@echo "usage: make TARGET [DATASET=synthetic|zebrafinch|fib25|hemi] [NETWORK=baseline|lsd|mtlsd|aclsd|acrlsd|long_range|malis]"
	@echo "                   [ROI=11_micron_roi|…]"
	@echo "                   [ITERATION=N] [CONFIG=03_predict/configs/X.json] [CONTAINER=image.sif [CONTAINER_MODE=run]]"
	@echo
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):[^#]*## (.*)/  \1\t\2/' | expand -t 20

# ---- environment -------------------------------------------------------------------------------------------------
setup: $(ENV_READY) ## create .venv (Python >= 3.12, found on PATH or through pyenv) and install the package

$(VENV)/.installed-$(TF_EXTRA): $(ROOT)/pyproject.toml
	@py="$(PYTHON)"; \
	if [ -z "$$py" ]; then py=$$($(ROOT)/.ci/find-python) || exit 1; fi; \
	echo "setup: $$py ($$($$py --version 2>&1)) -> $(VENV)"; \
	[ -x $(VENV)/bin/python ] || $$py -m venv $(VENV); \
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip; \
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e "$(ROOT)[$(TF_EXTRA),test]"; \
	rm -f $(VENV)/.installed-*; touch $@

TEST_WORKERS ?= 2
test: $(ENV_READY) ## run the test suite, its files spread over TEST_WORKERS processes (default 2; 0: one process; sets itself up first; installs Debian's chromium, postgresql, munge and slurm-wlm when missing, as root)
	$(call debian_package,command -v chromium,chromium,the neuroglancer screenshot tests)
	$(call debian_package,ls /usr/lib/postgresql/*/bin/initdb,postgresql,the region-graph tests)
	$(call debian_package,ls /usr/sbin/munged,munge,the Slurm cluster tests)
	$(call debian_package,ls /usr/sbin/slurmctld /usr/sbin/slurmd,slurm-wlm,the Slurm cluster tests)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

demo: $(ENV_READY) ## train, predict, segment and evaluate on the synthetic dataset, then write demo/report.md ([DEMO_NETWORKS="baseline mtlsd lsd acrlsd"] [DEMO_FAST=1]; installs Debian's chromium when missing, as root)
	$(call debian_package,command -v chromium,chromium,the report's neuroglancer screenshot)
	$(RUN) -m lsd_nm demo $(if $(strip $(DEMO_NETWORKS)),--networks $(DEMO_NETWORKS)) $(if $(filter 1 yes true,$(DEMO_FAST)),--fast) $(ARGS)

# ---- 00_containers -------------------------------------------------------------------------------------------
container: ## build the Singularity/Apptainer image lsd_nm.sif from 00_containers/lsd_nm.def ([SINGULARITY=apptainer] [ARGS=out.sif])
	SINGULARITY=$(SINGULARITY) $(ROOT)/00_containers/build.sh $(ARGS)

images: $(ENV_READY) ## download the original Singularity images into 00_containers/ (ARGS="--all" for both)
	$(call script,00_containers/download_imgs.py,$(ARGS))

# ---- 01_data ----------------------------------------------------------------------------------------------------
synthetic: $(ENV_READY) ## generate the embedded synthetic dataset (DATASET=synthetic|synthetic_iso)
	$(RUN) $(ROOT)/01_data/make_synthetic.py --dataset $(DATASET) $(ARGS)

new-dataset: $(ENV_READY) ## your own volumes as a dataset (NAME=… TRAIN="a.h5 b.zarr" [TEST=…] [RAW_DATASET=…] [LABELS_DATASET=…] [MASK_DATASET=…] [VOXEL_SIZE="z y x"] [RESCALE=1] [FORCE=1])
	$(call script,01_data/new_dataset.py,--name '$(NAME)' --train $(TRAIN) $(if $(TEST),--test $(TEST)) $(if $(RAW_DATASET),--raw-dataset '$(RAW_DATASET)') $(if $(LABELS_DATASET),--labels-dataset '$(LABELS_DATASET)') $(if $(MASK_DATASET),--mask-dataset '$(MASK_DATASET)') $(if $(VOXEL_SIZE),--voxel-size $(VOXEL_SIZE)) $(if $(RESCALE),--rescale) $(if $(FORCE),--force) $(ARGS))

fetch-data: $(ENV_READY) ## download training volumes from S3 (DATASET=… [VOLUMES=…|ALL=1])
	$(call script,01_data/fetch_data.py,--dataset $(DATASET) $(foreach v,$(VOLUMES),--volume $(v)) $(if $(ALL),--all) $(ARGS))

masks: $(ENV_READY) ## write volumes/labels/labels_mask into every fetched or synthetic volume
	$(call script,01_data/create_masks.py,$(ARGS))

view: $(ENV_READY) ## neuroglancer viewer of one volume (DATA=path.zarr)
	$(call script,01_data/view_data.py,$(DATA) $(ARGS))

fetch-test-data: $(ENV_READY) ## the paper's test data: zebrafinch skeletons + neuropil mask (ROI=… adds its raw), hemi/fib25 labels (DATASET=… [ROI=…])
	$(call script,01_data/fetch_test_data.py,--dataset $(DATASET) $(if $(ROI),--roi $(ROI) --network $(NETWORK)) $(ARGS))

fetch-published: $(ENV_READY) ## the authors' supervoxels and region graphs of a network (DATASET=… NETWORK=…)
	$(call script,01_data/fetch_published.py,--dataset $(DATASET) --network $(NETWORK) $(ARGS))

fetch-checkpoint: $(ENV_READY) ## download the published checkpoints (DATASET=… NETWORK=…)
	$(call script,01_data/fetch_checkpoint.py,--dataset $(DATASET) --network $(NETWORK) $(ARGS))

import-checkpoint: $(ENV_READY) ## convert a published TF1 checkpoint in a network folder into ours (DATASET=… NETWORK=…)
	$(RUN) -m lsd_nm import-checkpoint $(NETWORK_DIR) $(ARGS)

# ---- 02_train (run inside the network folder, as the original was) ---------------------------------------------
mknet: $(ENV_READY) ## build the network and write its description (DATASET=… NETWORK=…)
	$(call in_network,mknet.py,$(ARGS))

train: $(ENV_READY) ## train up to ITERATION (DATASET=… NETWORK=… ITERATION=…)
	$(call in_network,train.py,$(ITERATION) $(ARGS))

view-batch: $(ENV_READY) ## look at a training snapshot (DATASET=… NETWORK=… [ITERATION=…]; default: the newest)
	$(call in_network,view_batch.py,$(filter-out latest,$(ITERATION)) $(ARGS))

predict-scan: $(ENV_READY) ## predict a small volume in memory (DATASET=… NETWORK=… ITERATION=…)
	$(call in_network,predict_scan.py,$(ITERATION) $(ARGS))

# ---- 03_predict --------------------------------------------------------------------------------------------------
predict: $(ENV_READY) ## blockwise prediction of a large volume (CONFIG=…)
	$(call script,03_predict/01_predict_blockwise.py,'$(CONFIG)' $(ARGS))

segment: $(ENV_READY) ## predict, fragments, agglomerate, segments, evaluate, resuming finished work (CONFIG=…)
	$(call script,03_predict/segment.py,'$(CONFIG)' $(ARGS))

status: $(ENV_READY) ## per step of a run: blocks done/failed/total, last error, ETA, live workers (CONFIG=… [ARGS=--json])
	$(call script,03_predict/status.py,'$(CONFIG)' $(ARGS))

evaluate: $(ENV_READY) ## evaluate segmentations against labels and skeletons (CONFIG=…)
	$(call script,03_predict/06_evaluate.py,'$(CONFIG)' $(ARGS))

reproduce: $(ENV_READY) ## the paper's tables of a network → reproduce/<dataset>_<network>.* [THRESHOLDS=paper]
	$(call script,03_predict/07_reproduce.py,--dataset $(DATASET) --network $(NETWORK) $(THRESHOLD_RULE) $(ARGS))

# ---- benchmarks ------------------------------------------------------------------------------------------------
benchmark: $(ENV_READY) ## run every benchmark in one go: rows to benchmarks/RESULTS.md, ratios vs goals in benchmarks/results.png ([VOLARA=1]: volara side by side; ~25 min on 2 cores)
	@[ -d "$(ROOT)/01_data/funke/synthetic/testing/test_0.zarr" ] || $(MAKE) --no-print-directory -C $(ROOT) synthetic masks DATASET=synthetic
	$(if $(PEER_VOLARA),PEER_VOLARA=$(PEER_VOLARA) )$(RUN) $(ROOT)/benchmarks/run_all.py $(if $(filter 1 yes true,$(VOLARA)),--volara) $(ARGS)

# ---- cleaning (never deletes checkpoints) --------------------------------------------------------------------------
clean-data: ## delete generated synthetic volumes (fetched data and checkpoints stay)
	rm -rf $(ROOT)/01_data/funke/synthetic $(ROOT)/01_data/funke/synthetic_iso

clean: ## delete caches and logs (data, checkpoints and .venv stay)
	find $(ROOT) -name __pycache__ -type d -prune -exec rm -rf {} + ; rm -rf $(ROOT)/.pytest_cache $(ROOT)/daisy_logs

# ---- helpers -------------------------------------------------------------------------------------------------------
# $(call script,path/in/repo.py,args): run a script through $(RUN)
define script
	$(RUN) $(ROOT)/$(1) $(2)
endef

# $(call debian_package,command that succeeds when it is installed,package,what needs it): apt-get it as root, else say so
define debian_package
	@if ! $(1) >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "$@: installing Debian's $(2) (for $(3))"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null \
	            || echo "$@: apt-get install $(2) failed: $(3) will be missing" >&2; \
	    else \
	        echo "$@: Debian's $(2) is missing (apt-get install $(2) as root): $(3) will be missing" >&2; \
	    fi; \
	fi
endef

# $(call in_network,script.py,args): run a network folder's script from inside that folder
define in_network
	@if [ ! -d "$(NETWORK_DIR)" ]; then echo "make $@: no network folder 02_train/$(DATASET)/$(NETWORK)" >&2; exit 2; fi
	cd $(NETWORK_DIR) && $(RUN) $(1) $(2)
endef
