"""The CLI commands, one module per group of commands; each imports torch only when it runs."""
