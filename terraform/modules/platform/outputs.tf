output "database_url" {
  description = "PEFM_DATABASE_URL of the database's owner, the migrator (the pefm-database Secret's key url, which only the bootstrap Job reads)."
  value       = module.data.database_url
  sensitive   = true
}

output "role_database_urls" {
  description = "PEFM_DATABASE_URL of each component role by component (the pefm-database Secret's keys <component>-url)."
  value       = module.data.role_database_urls
  sensitive   = true
}

output "verify_keys" {
  description = "PEFM_VERIFY_KEYS of the deployment (the pefm-signing Secret's key public)."
  value       = module.data.verify_keys
}

output "database_cluster" {
  description = "namespace/name of the in-cluster CNPG Cluster; null with a managed database."
  value       = module.data.database_cluster
}

output "prometheus_url" {
  description = "In-cluster URL of the monitoring module's Prometheus: PEFM_PROMETHEUS_URL, Flagger's metricsServer, and the address for the Canary's MetricTemplates (`pefm knative canary --prometheus-url`)."
  value       = module.monitoring.prometheus_url
}

output "flagger_namespace" {
  description = "Namespace of Flagger."
  value       = module.knative.flagger_namespace
}

output "ingress_service" {
  description = "Kourier's LoadBalancer Service: point the domain's wildcard record at it."
  value       = module.knative.ingress_service
}

output "gpu_runtime_handler" {
  description = "containerd handler behind the `nvidia` RuntimeClass on this platform."
  value       = module.knative.runtime_handler
}

output "image_pull_secret" {
  description = "Image pull Secret for private ghcr.io packages in namespace pefm; null when none was asked for."
  value       = module.data.image_pull_secret
}

output "webhook_token" {
  description = "Token of Flagger's webhooks (pefm-tokens key webhook), for `pefm knative canary --webhook-token`."
  value       = module.data.webhook_token
  sensitive   = true
}

output "namespace" {
  description = "PEFM's namespace (Knative Services, Secrets pefm-database, pefm-tokens and pefm-signing)."
  value       = module.data.namespace
}
