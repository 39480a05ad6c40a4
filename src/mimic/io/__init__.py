"""Files written so that an interrupted run never leaves one that looks finished, logs, checkpoints.

- :mod:`mimic.io.atomic`: write to a temporary file, then rename;
- :mod:`mimic.io.logs`: the log file of every stage and the progress lines of long steps;
- :mod:`mimic.io.checkpoints`: a method's checkpoint files, written and read with their integrity checks.
"""
