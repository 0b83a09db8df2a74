# PEFM on AKS: resource group and VNet -> cluster (system, CPU and GPU pools; AKS scales the GPU
# pool from 0) -> Knative -> data -> monitoring. kubectl and Terraform authenticate through
# kubelogin with the Azure CLI's login (`az login`).
provider "azurerm" {
  features {}
  subscription_id = var.subscription_id
}

provider "kubernetes" {
  host                   = module.cluster.host
  cluster_ca_certificate = module.cluster.cluster_ca_certificate
  exec {
    api_version = module.cluster.exec_auth.api_version
    command     = module.cluster.exec_auth.command
    args        = module.cluster.exec_auth.args
  }
}

provider "helm" {
  kubernetes {
    host                   = module.cluster.host
    cluster_ca_certificate = module.cluster.cluster_ca_certificate
    exec {
      api_version = module.cluster.exec_auth.api_version
      command     = module.cluster.exec_auth.command
      args        = module.cluster.exec_auth.args
    }
  }
}

provider "kubectl" {
  host                   = module.cluster.host
  cluster_ca_certificate = module.cluster.cluster_ca_certificate
  load_config_file       = false
  exec {
    api_version = module.cluster.exec_auth.api_version
    command     = module.cluster.exec_auth.command
    args        = module.cluster.exec_auth.args
  }
}

resource "azurerm_resource_group" "this" {
  name     = var.cluster_name
  location = var.location
}

resource "azurerm_virtual_network" "this" {
  name                = var.cluster_name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = ["10.10.0.0/16"]
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = ["10.10.0.0/18"]
}

# Azure's default rules (traffic within the VNet and from Azure's load balancer) plus the
# Kourier ingress's HTTP and HTTPS from the internet.
resource "azurerm_network_security_group" "nodes" {
  #checkov:skip=CKV_AZURE_160:Port 80 is the public Knative ingress (Kourier): routes answer HTTP until a TLS certificate is configured, and redirect to HTTPS after.
  name                = "${var.cluster_name}-nodes"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name

  security_rule {
    name                       = "ingress-http"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_ranges    = ["80", "443"]
    source_address_prefix      = "Internet"
    destination_address_prefix = "VirtualNetwork"
  }
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.nodes.id
}

module "cluster" {
  source = "../../modules/aks"

  cluster_name                    = var.cluster_name
  resource_group_name             = azurerm_resource_group.this.name
  location                        = azurerm_resource_group.this.location
  vnet_subnet_id                  = azurerm_subnet.nodes.id
  api_server_authorized_ip_ranges = var.api_server_authorized_ip_ranges
  admin_group_object_ids          = var.admin_group_object_ids
}

module "platform" {
  source = "../../modules/platform"

  platform             = module.cluster.platform
  gpu_node_selector    = module.cluster.gpu_node_selector
  gpu_node_taint       = module.cluster.gpu_node_taint
  domain               = var.domain
  deploy_cache         = var.deploy_cache
  managed_database_url = var.managed_database_url
  registry_username    = var.registry_username
  registry_token       = var.registry_token
}
