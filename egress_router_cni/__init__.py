"""egress-router: a CNI plugin giving a pod a reserved source IP and redirecting its traffic."""

__version__ = "0.1.0"
