"""Study files (YAML) read by `feyntune study` and `feyntune reproduce`; a package only so that
they ship with the installed harness (reference.yaml is the reference study)."""
