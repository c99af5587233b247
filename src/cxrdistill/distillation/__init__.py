"""Knowledge distillation: losses by name, teacher outputs (online or cached) and the KD objective."""
