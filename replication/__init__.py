"""Reference replication of FactorVAE (Duan et al., AAAI 2022)."""
