"""Job specs (YAML) shipped with the package; run one with `curate run jobs/<name>.yaml`."""
