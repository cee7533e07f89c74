# Convenience wrapper around CMake. `make` builds, `make test` runs the
# tests (installing the Python reference libraries they need when missing),
# `make demo` runs one reasoning problem on the bundled model.
#
# The CUDA backend is built when CMake finds nvcc (LF_CUDA=AUTO); turn it off
# with `make CMAKE_FLAGS=-DLF_CUDA=OFF` (or force it with -DLF_CUDA=ON).
BUILD ?= build
JOBS ?= 2
PYTHON ?= python3
CMAKE_FLAGS ?=
REQS := tools/requirements-test.txt

.PHONY: all build test test-deps demo clean
all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$$(command -v $(PYTHON))" \
	  $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The tests compare against the Python tokenizers/transformers libraries
# (no torch): install $(REQS) when one of its distributions is not installed.
test-deps:
	@$(PYTHON) -c "import importlib.metadata as md, re, sys; \
	  names = [re.split('[<>=!~ ;]', l.strip())[0] for l in open('$(REQS)') if l.strip() and l[0] != '#']; \
	  sys.exit(any(next(iter(md.distributions(name=n)), None) is None for n in names))" || \
	{ echo "make test: installing the Python test libraries ($(REQS))"; \
	  $(PYTHON) -m pip install -q -r $(REQS) || \
	  { echo "make test: pip could not install $(REQS); on a system Python that refuses (PEP 668) use a venv:"; \
	    echo "  python3 -m venv .venv && . .venv/bin/activate && make test"; exit 1; }; }

test: build test-deps
	ctest --test-dir $(BUILD) -LE cuda --output-on-failure -j$(JOBS)

# One problem of the bundled tiny reasoner's "walk" family (problem 23 of
# models/tiny-reasoner/data/walk.jsonl; the true answer is e): the reasoning
# streams to stdout, the KV statistics go to stderr. The output is 930 tokens
# after a 171-token prompt: 800 slots hold 73% of the 1,100 tokens the full
# cache holds at its peak. (Measured: every budget from 780 to 1,100 in steps
# of 20 answers e; 760 and 775 do not.)
demo: build
	$(BUILD)/longflow generate --chat --prompt-file models/tiny-reasoner/demo_prompt.txt \
	  --policy longflow --budget 800

clean:
	rm -rf $(BUILD)
