# The cluster contract: eks, gke, aks and existing-cluster expose exactly these outputs.

output "platform" {
  description = "Which kind of cluster this is: eks, gke, aks or existing."
  value       = "aks"
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = azurerm_kubernetes_cluster.this.name
}

# host, cluster_ca_certificate and exec_auth configure the kubernetes, helm and kubectl providers: they
# wait until Terraform's identity may use the cluster (Azure RBAC, propagated) and until the CPU pool
# exists (the system pool is tainted CriticalAddonsOnly: nothing else schedules there), and until
# the cluster may create load balancers in its subnet. Otherwise the first apply races them (403s,
# Helm releases that never become ready, a Kourier Service without an address).
output "host" {
  description = "HTTPS address of the Kubernetes API server."
  value       = local.host
  depends_on  = [time_sleep.rbac_propagation, azurerm_kubernetes_cluster_node_pool.cpu, azurerm_role_assignment.cluster_network]
}

output "cluster_ca_certificate" {
  description = "PEM-encoded CA certificate of the API server."
  value       = local.cluster_ca_certificate
  depends_on  = [time_sleep.rbac_propagation, azurerm_kubernetes_cluster_node_pool.cpu, azurerm_role_assignment.cluster_network]
}

output "exec_auth" {
  description = "Credential plugin (api_version, command, args) the kubernetes/helm/kubectl providers run for a token; null when the kubeconfig's own user is used."
  value       = local.exec_auth
  depends_on  = [time_sleep.rbac_propagation, azurerm_kubernetes_cluster_node_pool.cpu, azurerm_role_assignment.cluster_network]
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
