"""bgcli: the Hugging Face stack behind one fast command line."""

__version__ = "0.1.0"
