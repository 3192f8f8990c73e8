#!/bin/sh
# ModelArts starts a custom-engine model image with `sh /home/mind/run.sh`; the model is in /home/mind/model.
exec /usr/bin/python3.9 /home/mind/serve.py
