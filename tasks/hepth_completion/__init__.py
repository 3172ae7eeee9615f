"""lm-eval task folder (YAML + utils.py); a package only so that installs carry its files."""
