"""leadscore: lead conversion probabilities learned from a team's own CRM history."""

__version__ = "0.1.0"
