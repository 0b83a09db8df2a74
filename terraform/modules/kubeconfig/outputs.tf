output "kubeconfig" {
  description = "The kubeconfig YAML (no embedded credentials: the exec plugin fetches a token)."
  value       = local.kubeconfig
}
