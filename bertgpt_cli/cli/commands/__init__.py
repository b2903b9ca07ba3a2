"""One module per command: NAME, HELP, CONFIG (the typed config) and run(config)."""
