"""Reading what operators write: ``batond.yaml``, rule, playbook and model files.

Every problem in a file is reported as ``FILE:LINE:COL: message``; what comes
out is frozen dataclasses that the rest of the daemon trusts.

- :mod:`~batond.load.yamlfile`: YAML with positions; ``Reader`` turns nodes into values
- :mod:`~batond.load.fields`, :mod:`~batond.load.kinds`: the one vocabulary every file
  is declared in (a ``Section`` of ``Field`` s, each of a ``Kind``); it reads the files
  and generates ``batond schema``
- :mod:`~batond.load.config`: ``batond.yaml``
- :mod:`~batond.load.rulefiles`: rule files (rules, schedules, playbooks) into a RuleSet
- :mod:`~batond.load.playbooks`: the playbook model, its sections, its reader
- :mod:`~batond.load.modelfile`: anomaly model files
- :mod:`~batond.load.templating`: ``{{ }}`` in YAML values compiled with exact marks
"""
