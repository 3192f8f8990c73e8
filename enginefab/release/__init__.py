"""`enginefab release`: the pipeline (`pipeline`), what a release publishes (`plan`), what the
registry lacks of it (`state`), its notes in Markdown (`notes`) and its static page (`page`)."""
