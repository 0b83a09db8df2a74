# PEFM on GKE: cluster (CPU + GPU node pools; GKE scales the GPU pool from 0 and runs its own
# NVIDIA device plugin) -> Knative -> data -> monitoring.
provider "google" {
  project = var.project_id
  region  = var.region
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

module "cluster" {
  source = "../../modules/gke"

  project_id                 = var.project_id
  location                   = var.region
  cluster_name               = var.cluster_name
  network                    = var.network
  subnetwork                 = var.subnetwork
  master_authorized_networks = var.master_authorized_networks
  dns_endpoint               = var.dns_endpoint
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
