"""Reference replication of FactorVAE (Duan et al., AAAI 2022)."""
from replication.files import git_commit as _git_commit

_git_commit()  # provenance: the commit of the code as loaded (see files.git_commit)
