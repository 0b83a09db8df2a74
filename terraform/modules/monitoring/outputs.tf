output "prometheus_url" {
  description = "In-cluster URL of Prometheus (PEFM_PROMETHEUS_URL for the rollout controller and the dashboard)."
  value       = "http://${local.release}-prometheus.${var.namespace}.svc.cluster.local:9090"
}

output "grafana_service" {
  description = "Grafana's Service (namespace/name); reach it with kubectl port-forward."
  value       = "${var.namespace}/${local.release}-grafana"
}

output "grafana_admin_password" {
  description = "Password of Grafana's admin user."
  value       = random_password.grafana.result
  sensitive   = true
}
