# PEFM on a cluster that already exists (on-premises, kind, k3s, any cloud): the kubeconfig in,
# then Knative -> data -> monitoring. GPU nodes, if any, must carry the module's GPU label and
# taint (NVIDIA's GPU operator or GPU feature discovery label them nvidia.com/gpu.present=true).
provider "kubernetes" {
  config_path    = pathexpand(var.kubeconfig_path)
  config_context = var.kubeconfig_context
}

provider "helm" {
  kubernetes {
    config_path    = pathexpand(var.kubeconfig_path)
    config_context = var.kubeconfig_context
  }
}

provider "kubectl" {
  config_path      = pathexpand(var.kubeconfig_path)
  config_context   = var.kubeconfig_context
  load_config_file = true
}

module "cluster" {
  source = "../../modules/existing-cluster"

  kubeconfig_path    = var.kubeconfig_path
  kubeconfig_context = var.kubeconfig_context
  gpu_node_selector  = var.gpu_node_selector
  gpu_node_taint     = var.gpu_node_taint
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
  storage_class        = var.storage_class

  nvidia_runtime_handler       = var.nvidia_runtime_handler
  install_nvidia_device_plugin = var.install_nvidia_device_plugin
}
