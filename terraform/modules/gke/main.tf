# A private, VPC-native GKE cluster (Dataplane V2, Workload Identity, Shielded nodes, Secrets
# encrypted with a Cloud KMS key it creates) with a CPU node pool and a GPU node pool that scales from 0.
# GKE installs the NVIDIA driver and its own device plugin on the GPU nodes. The module enables the
# Google APIs it uses, and gives the private nodes (no external addresses) a Cloud NAT so they can pull
# images from public registries (ghcr.io, Docker Hub, registry.k8s.io).
locals {
  gpu_taint  = { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" }
  gpu_labels = { "nvidia.com/gpu.present" = "true" }
  exec_auth = {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "gke-gcloud-auth-plugin"
    args        = []
  }
  node_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
  labels      = merge({ app = "pefm" }, var.labels)
  region      = replace(var.location, "/-[a-z]$/", "")

  # What this module calls: GKE, Compute Engine (network, NAT, nodes), Cloud KMS (secrets encryption),
  # IAM (the nodes' service account), Binary Authorization (the cluster's policy evaluation), and the
  # logging/monitoring the nodes write to. Service Usage and Cloud Resource Manager must already be on
  # for Terraform to enable these (they are on in new projects).
  apis = toset([
    "container.googleapis.com",
    "compute.googleapis.com",
    "cloudkms.googleapis.com",
    "iam.googleapis.com",
    "binaryauthorization.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
  ])
}

resource "google_project_service" "this" {
  for_each = local.apis
  project  = var.project_id
  service  = each.value
  # Other workloads of the project may use them: destroying the cluster leaves the APIs on.
  disable_on_destroy = false
}

data "google_project" "this" {
  project_id = var.project_id
}

# Kubernetes Secrets are encrypted in etcd with this key (application-layer secrets encryption).
resource "google_kms_key_ring" "this" {
  project    = var.project_id
  name       = var.cluster_name
  location   = local.region
  depends_on = [google_project_service.this]
}

resource "google_kms_crypto_key" "secrets" {
  name            = "${var.cluster_name}-secrets"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = "7776000s"

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "gke_agent" {
  crypto_key_id = google_kms_crypto_key.secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
  depends_on    = [google_project_service.this] # enabling the GKE API creates that service agent
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.cluster_name}-nodes"
  display_name = "GKE nodes of ${var.cluster_name}"
  depends_on   = [google_project_service.this]
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_12:Dataplane V2 (ADVANCED_DATAPATH) enforces NetworkPolicy itself; GKE rejects the legacy network_policy (Calico) block alongside it.
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain with a gke-security-groups group, which not every project has; RBAC still applies to users and service accounts.
  depends_on = [google_kms_crypto_key_iam_member.gke_agent, google_project_service.this]

  project             = var.project_id
  name                = var.cluster_name
  location            = var.location
  network             = var.network
  subnetwork          = var.subnetwork
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = "REGULAR"
  }

  networking_mode             = "VPC_NATIVE"
  datapath_provider           = "ADVANCED_DATAPATH"
  enable_intranode_visibility = true
  enable_shielded_nodes       = true
  enable_legacy_abac          = false
  ip_allocation_policy {}

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  # The DNS-based control plane endpoint, when asked for: reachable from anywhere, authorized by IAM
  # (container.clusters.connect) instead of master_authorized_networks, e.g. for CI runners.
  dynamic "control_plane_endpoints_config" {
    for_each = var.dns_endpoint ? [1] : []
    content {
      dns_endpoint_config {
        allow_external_traffic = true
      }
    }
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.secrets.id
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  # The default pool is removed right after creation; these settings only cover its short life.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "cpu" {
  project  = var.project_id
  name     = "cpu"
  location = var.location
  cluster  = google_container_cluster.this.name

  autoscaling {
    min_node_count = var.cpu_min_nodes
    max_node_count = var.cpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    labels          = local.labels
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "gpu" {
  project  = var.project_id
  name     = "gpu"
  location = var.location
  cluster  = google_container_cluster.this.name

  initial_node_count = 0
  autoscaling {
    min_node_count = 0
    max_node_count = var.gpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_scopes
    labels          = merge(local.labels, local.gpu_labels)

    guest_accelerator {
      type  = var.gpu_accelerator_type
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    taint {
      key    = local.gpu_taint.key
      value  = local.gpu_taint.value
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

# A private cluster's control plane reaches the nodes only on the ports of GKE's own firewall rule
# (443 and 10250, from master_ipv4_cidr_block). The admission webhooks PEFM installs listen elsewhere:
# Knative Serving's and Eventing's webhooks on 8443, the CloudNativePG operator's on 9443. Without this
# rule the API server cannot call them and every Knative Service, CNPG Cluster and Database is refused
# (context deadline exceeded). The node pools are picked by their service account (they have no tags).
resource "google_compute_firewall" "webhooks" {
  project     = var.project_id
  name        = "${var.cluster_name}-master-webhooks"
  network     = var.network
  description = "GKE control plane of ${var.cluster_name} to the admission webhooks on its nodes (Knative 8443, CloudNativePG 9443)."
  direction   = "INGRESS"

  source_ranges           = [var.master_ipv4_cidr_block]
  target_service_accounts = [google_service_account.nodes.email]

  allow {
    protocol = "tcp"
    ports    = ["8443", "9443"]
  }

  depends_on = [google_project_service.this]
}

# Private nodes have no external address: Cloud NAT gives them egress to the internet (image pulls
# from ghcr.io, Docker Hub, registry.k8s.io, gcr.io for Knative). Router and NAT are regional.
resource "google_compute_router" "nat" {
  count      = var.create_cloud_nat ? 1 : 0
  project    = var.project_id
  name       = "${var.cluster_name}-nat"
  region     = local.region
  network    = var.network
  depends_on = [google_project_service.this]
}

resource "google_compute_router_nat" "nat" {
  count                              = var.create_cloud_nat ? 1 : 0
  project                            = var.project_id
  name                               = "${var.cluster_name}-nat"
  router                             = google_compute_router.nat[0].name
  region                             = local.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

module "kubeconfig" {
  source = "../kubeconfig"

  cluster_name           = google_container_cluster.this.name
  host                   = "https://${google_container_cluster.this.endpoint}"
  cluster_ca_certificate = base64decode(google_container_cluster.this.master_auth[0].cluster_ca_certificate)
  exec_auth              = local.exec_auth
}
