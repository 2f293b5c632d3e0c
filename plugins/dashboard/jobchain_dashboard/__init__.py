"""The jobchain dashboard: web pages over a jobchain App (replaced by the integrator at merge)."""
