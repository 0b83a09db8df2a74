# Optional: the trust GitHub Actions needs to deploy (azure/login with client-id, tenant-id and
# subscription-id, no secret; then az aks get-credentials + kubelogin convert-kubeconfig -l
# workloadidentity, which trades the job's GitHub tokens for AKS tokens with the same credential).
# Set github_repository to create:
# - a user-assigned managed identity with a federated credential that accepts only tokens of that
#   repository's jobs in environment github_environment (issuer token.actions.githubusercontent.com,
#   subject repo:OWNER/NAME:environment:ENV, audience api://AzureADTokenExchange),
# - Azure RBAC for Kubernetes (local accounts are off): Cluster User Role on the cluster (fetch the
#   kubeconfig), RBAC Admin on namespace pefm, RBAC Writer on namespace knative-serving (the GPU
#   overlay's config-features ConfigMap; Azure RBAC has no narrower built-in role), RBAC Reader on
#   namespace flagger-system (CD reads Flagger's -metrics-server when PEFM_PROMETHEUS_URL is unset).
# The API server must also admit the runner: add its egress range to api_server_authorized_ip_ranges
# (or run CD on a self-hosted runner inside the VNet).
locals {
  github_cd  = var.github_repository != null
  cluster_id = "/subscriptions/${var.subscription_id}/resourceGroups/${azurerm_resource_group.this.name}/providers/Microsoft.ContainerService/managedClusters/${module.cluster.cluster_name}"
}

data "azurerm_client_config" "current" {}

resource "azurerm_user_assigned_identity" "github_cd" {
  count               = local.github_cd ? 1 : 0
  name                = "${var.cluster_name}-github-cd"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
}

resource "azurerm_federated_identity_credential" "github_cd" {
  count               = local.github_cd ? 1 : 0
  name                = "github-${var.github_environment}"
  resource_group_name = azurerm_resource_group.this.name
  parent_id           = azurerm_user_assigned_identity.github_cd[0].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = "https://token.actions.githubusercontent.com"
  subject             = "repo:${var.github_repository}:environment:${var.github_environment}"
}

resource "azurerm_role_assignment" "github_cd" {
  for_each = local.github_cd ? {
    cluster-user   = { scope = local.cluster_id, role = "Azure Kubernetes Service Cluster User Role" }
    pefm-admin     = { scope = "${local.cluster_id}/namespaces/${module.platform.namespace}", role = "Azure Kubernetes Service RBAC Admin" }
    knative-writer = { scope = "${local.cluster_id}/namespaces/knative-serving", role = "Azure Kubernetes Service RBAC Writer" }
    flagger-reader = { scope = "${local.cluster_id}/namespaces/${module.platform.flagger_namespace}", role = "Azure Kubernetes Service RBAC Reader" }
  } : {}
  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.github_cd[0].principal_id
  principal_type       = "ServicePrincipal"
}
