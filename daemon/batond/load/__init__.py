"""Reading what operators write: ``batond.yaml``, rule, playbook and model files.

Every problem in a file is reported as ``FILE:LINE:COL: message``; what comes
out is frozen dataclasses that the rest of the daemon trusts.
"""
