"""The domain: model, services, persistence, providers and jobs. Imports neither front."""
