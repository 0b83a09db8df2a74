# An AKS cluster with Entra ID + Azure RBAC only (no local accounts), Azure network policy,
# Container Insights, Azure Policy, host encryption and ephemeral OS disks: a system pool for
# critical add-ons, a CPU user pool and a GPU pool that scales from 0. AKS installs the NVIDIA
# driver on the GPU nodes; the knative module adds NVIDIA's device plugin.
# Host encryption needs the EncryptionAtHost feature registered on the subscription once:
#   az feature register --namespace Microsoft.Compute --name EncryptionAtHost
locals {
  gpu_taint  = { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" }
  gpu_labels = { "nvidia.com/gpu.present" = "true" }
  exec_auth = {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "kubelogin"
    # The server id is the fixed application id of the AKS Entra ID server.
    args = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
  }
  host                   = "https://${azurerm_kubernetes_cluster.this.fqdn}:443"
  cluster_ca_certificate = nonsensitive(base64decode(azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate))
}

data "azurerm_client_config" "current" {}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.cluster_name}-logs"
  location            = var.location
  resource_group_name = var.resource_group_name
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

resource "azurerm_kubernetes_cluster" "this" {
  #checkov:skip=CKV_AZURE_115:The API server stays public but only for api_server_authorized_ip_ranges; a private cluster would need Terraform to run inside the VNet.
  #checkov:skip=CKV_AZURE_6:The ranges come from the required variable api_server_authorized_ip_ranges, whose validation refuses an empty list; checkov cannot evaluate a variable without a default.
  #checkov:skip=CKV_AZURE_117:Node disks are encrypted at rest with platform-managed keys and host encryption is on; customer-managed keys are opt-in through disk_encryption_set_id.
  name                = var.cluster_name
  location            = var.location
  resource_group_name = var.resource_group_name
  dns_prefix          = var.cluster_name
  kubernetes_version  = var.kubernetes_version
  sku_tier            = "Standard"
  tags                = var.tags

  automatic_upgrade_channel         = "patch"
  node_os_upgrade_channel           = "NodeImage"
  local_account_disabled            = true
  role_based_access_control_enabled = true
  azure_policy_enabled              = true
  disk_encryption_set_id            = var.disk_encryption_set_id

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    tenant_id              = data.azurerm_client_config.current.tenant_id
    admin_group_object_ids = var.admin_group_object_ids
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin = "azure"
    network_policy = "azure"
  }

  oms_agent {
    log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    vnet_subnet_id               = var.vnet_subnet_id
    only_critical_addons_enabled = true
    auto_scaling_enabled         = true
    min_count                    = 1
    max_count                    = 3
    max_pods                     = 50
    os_disk_type                 = "Ephemeral"
    os_disk_size_gb              = var.os_disk_size_gb
    host_encryption_enabled      = true
    tags                         = var.tags

    upgrade_settings {
      max_surge = "33%"
    }
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                    = "cpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  vm_size                 = var.cpu_vm_size
  vnet_subnet_id          = var.vnet_subnet_id
  mode                    = "User"
  auto_scaling_enabled    = true
  min_count               = var.cpu_min_nodes
  max_count               = var.cpu_max_nodes
  max_pods                = 50
  os_disk_type            = "Ephemeral"
  os_disk_size_gb         = var.os_disk_size_gb
  host_encryption_enabled = true
  tags                    = var.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                    = "gpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  vm_size                 = var.gpu_vm_size
  vnet_subnet_id          = var.vnet_subnet_id
  mode                    = "User"
  auto_scaling_enabled    = true
  node_count              = 0
  min_count               = 0
  max_count               = var.gpu_max_nodes
  max_pods                = 50
  os_disk_type            = "Ephemeral"
  os_disk_size_gb         = var.os_disk_size_gb
  host_encryption_enabled = true
  node_labels             = local.gpu_labels
  node_taints             = ["${local.gpu_taint.key}=${local.gpu_taint.value}:${local.gpu_taint.effect}"]
  tags                    = var.tags
}

# The identity running Terraform administers the cluster through Azure RBAC (local accounts are off).
resource "azurerm_role_assignment" "terraform_admin" {
  scope                = azurerm_kubernetes_cluster.this.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = data.azurerm_client_config.current.object_id
}

# Azure RBAC assignments take a while to reach the API server's authorizer: until then every
# Kubernetes call answers 403. The outputs the providers are configured from wait for this.
resource "time_sleep" "rbac_propagation" {
  create_duration = var.rbac_propagation_wait
  triggers        = { role_assignment = azurerm_role_assignment.terraform_admin.id }
}

# The cluster's own identity manages the load balancers and their frontends in the node subnet
# (Kourier's LoadBalancer Service): with a subnet the cluster did not create, that takes Network
# Contributor on it, which `az aks create` grants by itself and Terraform must grant explicitly;
# without it the Service stays pending with AuthorizationFailed on .../subnets/read and join.
resource "azurerm_role_assignment" "cluster_network" {
  scope                = var.vnet_subnet_id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_kubernetes_cluster.this.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

module "kubeconfig" {
  source = "../kubeconfig"

  cluster_name           = azurerm_kubernetes_cluster.this.name
  host                   = local.host
  cluster_ca_certificate = local.cluster_ca_certificate
  exec_auth              = local.exec_auth
}
