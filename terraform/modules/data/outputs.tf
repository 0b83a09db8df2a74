output "database_url" {
  description = "postgresql:// URL of PEFM's database as its owner, the migrator (also in the pefm-database Secret, key url, which only the bootstrap Job reads): the CNPG read-write Service with the pefm role, or managed_database_url."
  value       = local.database_url
  sensitive   = true
}

output "role_database_urls" {
  description = "postgresql:// URL of each component role by component (ingest, inference, monitor, rollout, dashboard, trainer; also in the pefm-database Secret, keys <component>-url): e.g. the dashboard or `pefm train` run outside the cluster as pefm_dashboard or pefm_trainer."
  value       = local.role_urls
  sensitive   = true
}

output "verify_keys" {
  description = "PEFM_VERIFY_KEYS: the public keys model artifacts must be signed with (also in the pefm-signing Secret, key public; the private key stays in that Secret, key private)."
  value       = local.verify_keys
}

output "database_cluster" {
  description = "namespace/name of the CNPG Cluster (kubectl -n NS get cluster NAME; its PodDisruptionBudgets are NAME and NAME-primary); null with a managed database."
  value       = local.in_cluster ? "${var.database_namespace}/${local.cluster_name}" : null
}

output "namespace" {
  description = "Namespace holding the pefm-database, pefm-tokens, pefm-signing and pefm-cache Secrets, where the Knative Services go."
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

output "webhook_token" {
  description = "Bearer token Flagger's webhooks present to the rollout API (pefm knative canary --webhook-token)."
  value       = random_password.token["webhook"].result
  sensitive   = true
}

output "image_pull_secret" {
  description = "Name of the image pull Secret for ghcr.io in namespace (add it to the ServiceAccounts' imagePullSecrets); null when none was asked for."
  value       = local.pull_secret ? kubernetes_secret_v1.registry[0].metadata[0].name : null
}
