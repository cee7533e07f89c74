# Convenience wrapper around CMake. `make` builds, `make test` runs the
# tests, `make demo` runs one reasoning problem on the bundled model.
BUILD ?= build
JOBS ?= 2

.PHONY: all build test demo clean
all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

test: build
	ctest --test-dir $(BUILD) -LE cuda --output-on-failure -j$(JOBS)

# One problem of the bundled tiny reasoner's "sum" family (the true answer is
# 146): the reasoning streams to stdout, the KV statistics go to stderr.
demo: build
	$(BUILD)/longflow generate --chat --prompt-file models/tiny-reasoner/demo_prompt.txt \
	  --policy longflow --budget 448 --max-tokens 600

clean:
	rm -rf $(BUILD)
