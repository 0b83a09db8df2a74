# The cluster contract: eks, gke, aks and existing-cluster expose exactly these outputs.

output "platform" {
  description = "Which kind of cluster this is: eks, gke, aks or existing."
  value       = "existing"
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = local.context.cluster
}

output "host" {
  description = "HTTPS address of the Kubernetes API server."
  value       = local.cluster.server
}

output "cluster_ca_certificate" {
  description = "PEM-encoded CA certificate of the API server."
  value       = local.cluster_ca_certificate
}

output "exec_auth" {
  description = "Credential plugin (api_version, command, args) the kubernetes/helm/kubectl providers run for a token; null when the kubeconfig's own user is used."
  value       = null
}

output "kubeconfig" {
  description = "A kubeconfig YAML for kubectl that reaches this cluster."
  value       = local.kubeconfig_text
  sensitive   = true
}

output "gpu_node_selector" {
  description = "Labels that select the GPU nodes (the GPU overlay's nodeSelector)."
  value       = var.gpu_node_selector
}

output "gpu_node_taint" {
  description = "Taint on the GPU nodes (key, value, effect) that GPU pods must tolerate."
  value       = var.gpu_node_taint
}
