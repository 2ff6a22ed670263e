"""From a command line and a composed config to a checked job, before any run exists."""
