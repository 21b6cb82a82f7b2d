"""The command line, run folders, pictures and the report."""
