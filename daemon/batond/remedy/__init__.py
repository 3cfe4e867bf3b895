"""Running playbooks: the runner, its steps, the run model and the actions."""
