output "kubeconfig" {
  description = "kubeconfig for kubectl (`terraform output -raw kubeconfig > pefm.kubeconfig`)."
  value       = module.cluster.kubeconfig
  sensitive   = true
}

output "database_url" {
  description = "PEFM_DATABASE_URL of the deployment."
  value       = module.platform.database_url
  sensitive   = true
}

output "prometheus_url" {
  description = "PEFM_PROMETHEUS_URL inside the cluster."
  value       = module.platform.prometheus_url
}

output "ingress_service" {
  description = "Kourier's LoadBalancer Service: point the domain's wildcard record at it."
  value       = module.platform.ingress_service
}
