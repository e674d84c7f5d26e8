# Two entry points a newcomer needs (see README):
#   make demo   set up (when needed) and run the main job
#   make test   set up (when needed) and run lint + the whole test suite, notebooks included,
#               and build the docs (make docs)
# Both are safe to rerun; the virtual environment is rebuilt only when the
# dependency files change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export MPLBACKEND := Agg

.PHONY: demo test setup lint wheel-check docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned (constraints.txt) and installed in the same command as pyro-ppl,
	# so pip never pulls a CUDA build of torch.
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-moe demo
	$(BIN)/pyro-moe reproduce --quick --out reproduce_out

lint: $(STAMP)
	$(BIN)/ruff check pyro_moe models tests benchmarks notebooks setup.py
	$(BIN)/ruff format --check pyro_moe models tests benchmarks notebooks setup.py

# The wheel, installed outside the checkout, ships models/ and fits each built-in model.
wheel-check: $(STAMP)
	$(BIN)/python tests/wheel_check.py

# The docs site into site/ (git-ignored), warnings as errors; notebooks render from their
# stored outputs (never executed here: notebooks/_build.py executes and stores them).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# two pytest workers (pytest-xdist), one per core, each test file on one worker (a file's
# fits cached for its tests stay with it); OMP_NUM_THREADS=1 keeps each to one thread
test: lint wheel-check docs
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests --nbmake notebooks

bench: $(STAMP)
	$(BIN)/python -m pip install -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache site
