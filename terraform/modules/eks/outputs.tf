# The cluster contract: eks, gke, aks and existing-cluster expose exactly these outputs.

output "platform" {
  description = "Which kind of cluster this is: eks, gke, aks or existing."
  value       = "eks"
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = module.eks.cluster_name
}

output "host" {
  description = "HTTPS address of the Kubernetes API server."
  value       = module.eks.cluster_endpoint
}

output "cluster_ca_certificate" {
  description = "PEM-encoded CA certificate of the API server."
  value       = base64decode(module.eks.cluster_certificate_authority_data)
}

output "exec_auth" {
  description = "Credential plugin (api_version, command, args) the kubernetes/helm/kubectl providers run for a token; null when the kubeconfig's own user is used."
  value       = local.exec_auth
}

output "kubeconfig" {
  description = "A kubeconfig YAML for kubectl that reaches this cluster."
  value       = module.kubeconfig.kubeconfig
  sensitive   = true
}

output "gpu_node_selector" {
  description = "Labels that select the GPU nodes (the GPU overlay's nodeSelector)."
  value       = local.gpu_labels
}

output "gpu_node_taint" {
  description = "Taint on the GPU nodes (key, value, effect) that GPU pods must tolerate."
  value       = local.gpu_taint
}
