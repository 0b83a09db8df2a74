output "database_url" {
  description = "PEFM_DATABASE_URL of the deployment (also in the pefm-database Secret)."
  value       = module.data.database_url
  sensitive   = true
}

output "prometheus_url" {
  description = "PEFM_PROMETHEUS_URL inside the cluster."
  value       = module.monitoring.prometheus_url
}

output "ingress_service" {
  description = "Kourier's LoadBalancer Service: point the domain's wildcard record at it."
  value       = module.knative.ingress_service
}
