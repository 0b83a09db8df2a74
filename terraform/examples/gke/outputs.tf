output "kubeconfig" {
  description = "kubeconfig for kubectl (`terraform output -raw kubeconfig > pefm.kubeconfig`)."
  value       = module.cluster.kubeconfig
  sensitive   = true
}

output "database_url" {
  description = "PEFM_DATABASE_URL of the database's owner, the migrator (migrations, `pefm db roles`); the components connect as their roles (role_database_urls)."
  value       = module.platform.database_url
  sensitive   = true
}

output "role_database_urls" {
  description = "PEFM_DATABASE_URL of each component's database role, by component (e.g. trainer for `pefm train` outside the cluster)."
  value       = module.platform.role_database_urls
  sensitive   = true
}

output "prometheus_url" {
  description = "Prometheus inside the cluster: PEFM_PROMETHEUS_URL, Flagger's metricsServer, and `pefm knative canary --prometheus-url`."
  value       = module.platform.prometheus_url
}

output "ingress_service" {
  description = "Kourier's LoadBalancer Service: point the domain's wildcard record at it."
  value       = module.platform.ingress_service
}

output "database_cluster" {
  description = "namespace/name of the in-cluster CNPG Cluster; null with a managed database."
  value       = module.platform.database_cluster
}

output "image_pull_secret" {
  description = "Image pull Secret for private ghcr.io packages in namespace pefm; null when none."
  value       = module.platform.image_pull_secret
}

output "webhook_token" {
  description = "Token of Flagger's webhooks, for `pefm knative canary --webhook-token`."
  value       = module.platform.webhook_token
  sensitive   = true
}

output "github_workload_identity_provider" {
  description = "workload_identity_provider for google-github-actions/auth; null without github_repository."
  value       = local.github_cd ? google_iam_workload_identity_pool_provider.github[0].name : null
}

output "github_cd_service_account" {
  description = "service_account for google-github-actions/auth; null without github_repository."
  value       = local.github_cd ? google_service_account.github_cd[0].email : null
}
