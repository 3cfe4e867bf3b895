# Convenience targets; the README's commands are the scripts themselves.
.PHONY: run test bench
run:
	./scripts/run-local
test:
	./scripts/test
bench:
	.venv/bin/python bench/run_all.py
