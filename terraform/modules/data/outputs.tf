output "database_url" {
  description = "postgresql:// URL of PEFM's database (also in the pefm-database Secret, key url)."
  value       = local.database_url
  sensitive   = true
}

output "namespace" {
  description = "Namespace holding the pefm-database and pefm-tokens Secrets, where the Knative Services go."
  value       = kubernetes_namespace_v1.pefm.metadata[0].name
}

output "ingest_token" {
  description = "Bearer token the ingest function requires for writes (PEFM_INGEST_TOKEN)."
  value       = random_password.token["ingest"].result
  sensitive   = true
}

output "admin_token" {
  description = "Bearer token of the rollout and admin APIs (PEFM_ADMIN_TOKEN)."
  value       = random_password.token["admin"].result
  sensitive   = true
}
