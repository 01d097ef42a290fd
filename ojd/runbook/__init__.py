"""The runbook language: HCL (and TOML/JSON) read into blocks, validated into the model,
and the `${...}` templates and bash quoting its scripts are rendered with."""
