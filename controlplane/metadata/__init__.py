"""DataHub's metadata model as the control plane serves it: the entity registry (from DataHub's
own schema classes), urns, aspect validation, and the versioned aspect store."""
