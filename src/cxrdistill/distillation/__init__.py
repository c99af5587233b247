"""Knowledge distillation: losses by name, teacher outputs (online or cached), the KD objective, sweeps."""
