"""Command-line helpers of the education plugin (run with ``python -m panconv_education.tools.<name>``)."""
