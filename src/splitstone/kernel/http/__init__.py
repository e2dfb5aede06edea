"""HTTP plumbing shared by every module: problem+json errors, request ids, body limits, probes."""
