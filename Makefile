# Every target works from a fresh clone: it creates .venv when absent and
# installs what it needs. torch is installed first and pinned, so that pip never
# resolves the package's torch range to a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
EXTRAS ?= test,plot,progress,rl,dev,hf
STAMP  := $(VENV)/.fisherprec-installed

.PHONY: all install demo test fuzz bench lint cuda-check clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable install that rebuilds the extension on import after a change in
# csrc/ (needs --no-build-isolation and the fixed build-dir in pyproject.toml).
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "make: installing $(TORCH) and numpy into $(VENV)"
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH) numpy
	$(BIN)/pip install --disable-pip-version-check -q "scikit-build-core>=0.10" "pybind11>=2.12"
	@echo "make: building fisherprec's native kernels (C++, and CUDA when nvcc is found;" \
	    "1-3 minutes on 2 cores) and installing the package with extras [$(EXTRAS)]"
	$(BIN)/pip install --disable-pip-version-check -q --no-build-isolation \
	    -Ceditable.rebuild=true -e ".[$(EXTRAS)]"
	@$(BIN)/python -c "import fisherprec._C as c; i = c.build_info(); print('make: built', i['version'], 'with', i['compiler'] + (', CUDA ' + i['cuda_compiler_version'] if i['cuda_built'] else ', CPU only'))"
	touch $@

install: $(STAMP)

# The main job: every registered optimizer on the ill-conditioned regression task
# (a few minutes on 2 cores, one progress line per run); table on stdout, JSON + PNG
# under build/demo.
# `python -m fisherprec demo` still prints the build information.
demo: $(STAMP)
	@echo "make: fisherprec compare --task regression (every registered optimizer, 2 seeds); table and plots in build/demo"
	$(BIN)/python -m fisherprec compare --task regression --out build/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --benchmark-disable tests

# The long fuzz profile (5,000 cases per area, each area in a subprocess).
fuzz: $(STAMP)
	FISHERPREC_FUZZ=long $(BIN)/python -m pytest -q -s tests/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python -m pytest -q bench -o python_files="bench_*.py" --benchmark-only --benchmark-columns=min,median,mean,stddev,rounds

lint: $(STAMP)
	$(BIN)/ruff check fisherprec tests bench
	$(BIN)/ruff format --check fisherprec tests bench

# Compile-only build of the CUDA kernels (no GPU needed), then check that the
# module imports and reports a missing driver cleanly.
cuda-check: $(STAMP)
	rm -rf build/cuda-check
	$(BIN)/pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
	    -Cbuild-dir=build/cuda-check/build -Ccmake.define.FISHERPREC_CUDA=ON \
	    -w build/cuda-check/wheel .
	cd build/cuda-check && ../../$(BIN)/python -m zipfile -e wheel/*.whl pkg
	$(BIN)/python tests/cuda_import_check.py build/cuda-check/pkg

clean:
	rm -rf build
